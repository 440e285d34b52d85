//! The federation port (issue 19; plan in docs/design/federation.md): QUIC
//! with ALPN `qpc-fed/1`, TLS 1.3 with mutual authentication by pinned
//! certificates, between this server and the peers of `[[federation.peers]]`.
//!
//! - `peers`: the peer table (config, pins, status);
//! - `inbound`: accepting peer connections and serving their requests;
//! - `claims`: our users as peers ask for them (account keys, key
//!   packages), and our users' lookups of theirs;
//! - `proxy`: commits and leaves of groups other servers host, forwarded
//!   to and taken by the hub;
//! - `outbound`: one task per peer keeping a connection to it;
//! - `stream_sender`: one task per peer sending our stream to it;
//! - `wire`: stream entries between the wire and the domain.
//!
//! The port has its own endpoint (and UDP socket), which both accepts and
//! dials, so operators can firewall it apart from the client port and tests
//! can cut it alone. It is off unless `federation.listen` is set.

pub(crate) mod claims;
mod inbound;
mod outbound;
mod peers;
pub(crate) mod proxy;
mod stream_sender;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::tls::ServerIdentity;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::federation::outbox::Outbox;
use crate::domain::federation::stream::RetryPolicy;
use crate::domain::DomainError;
use crate::metrics::{FederationMetrics, Metrics};
use crate::transport::ServerState;

pub use peers::PeerStatus;

pub(crate) use peers::PeerTable;

use inbound::accept_peers;
use outbound::keep_in_touch_with_peers;
use stream_sender::start_stream_senders;

/// How long a call to a peer waits for the first connection to it being
/// made before it answers `UNAVAILABLE`.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the federation tasks share.
pub(crate) struct Federation {
    /// Our `server.domain`, pinned in the database.
    pub(crate) domain: String,
    /// The federation endpoint: accepts peers and dials them.
    pub(crate) endpoint: quinn::Endpoint,
    /// Its bound address.
    pub(crate) local_addr: SocketAddr,
    /// Our certificate, presented to peers we dial.
    pub(crate) identity: Arc<ServerIdentity>,
    /// The configured peers and their status.
    pub(crate) peers: PeerTable,
    /// The stream senders; shutdown waits for their batches in flight.
    pub(crate) senders: TaskTracker,
    /// Cancelled once the senders are done at shutdown: the connections to
    /// peers may close.
    pub(crate) workers_done: CancellationToken,
    pub(crate) metrics: Metrics,
}

/// The retry policy of every federation connection and stream.
pub(crate) fn retry_policy(config: &crate::ServerConfig) -> RetryPolicy {
    RetryPolicy {
        retry_min: config.federation.retry_min,
        retry_max: config.federation.retry_max,
        answer_timeout: config.rpc_timeout,
    }
}

impl Federation {
    /// The federation series.
    pub(crate) fn metrics(&self) -> &FederationMetrics {
        self.metrics.federation()
    }

    /// Starts serving: accepts peers, keeps a connection to each, and
    /// sends each its stream.
    pub(crate) fn start(self: &Arc<Self>, state: &Arc<ServerState>) {
        tracing::info!(
            listen = %self.local_addr,
            peers = self.peers.peers().len(),
            domain = %self.domain,
            "federation port listening"
        );
        state.tasks.spawn_connection_task(accept_peers(self.endpoint.clone(), state.clone(), self.clone()));
        keep_in_touch_with_peers(state, self);
        start_stream_senders(state, self);
    }

    /// What the domain writes for peers with: our domain and the stream's
    /// encoding of a group event.
    pub(crate) fn outbox(&self) -> Outbox<'_> {
        Outbox {
            home: &self.domain,
            encode: &wire::encode_group_event,
            encode_relay: &wire::encode_relay,
            encode_refused: &wire::encode_refused,
        }
    }

    /// Entries were appended to the streams of `peers`: their senders send now.
    pub(crate) fn written(&self, peers: &[String]) {
        for peer in self.peers.peers().iter().filter(|peer| peers.contains(&peer.config.domain)) {
            peer.written.notify_one();
        }
    }

    /// Calls `method` on the peer `domain` over our connection to it (waiting
    /// up to [`CONNECTION_WAIT`] for the first): the
    /// peer's refusal comes back as the same status; no connection, or a
    /// connection that fails, is `UNAVAILABLE` (retryable).
    pub(crate) async fn call_peer<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        domain: &str,
        method: quicprochat_proto::Method,
        request: &Req,
    ) -> Result<Resp, DomainError> {
        let peer = self.peers.peers().iter().find(|peer| peer.config.domain == domain).ok_or_else(|| {
            DomainError::not_found(format!("this server does not federate with {domain} (no such peer)"))
        })?;
        // No suggested delay: nobody knows when the peer is back, and the
        // client's own retries (a commit's resubmissions) are enough.
        let unavailable = |detail: String| DomainError::Unavailable {
            message: format!("{domain} cannot be reached now: {detail}"),
            retry_after_ms: 0,
        };
        // A peer being dialled for the first time (just after our start)
        // gets a moment to answer; one known down is answered at once.
        let known_down =
            self.peers.status().iter().any(|status| status.domain == domain && status.last_error.is_some());
        let wait = if known_down { std::time::Duration::ZERO } else { CONNECTION_WAIT };
        let mut connection = peer.connection.subscribe();
        let client = match tokio::time::timeout(wait, connection.wait_for(Option::is_some)).await {
            Ok(Ok(client)) => client.clone(),
            _ => None,
        }
        .ok_or_else(|| unavailable("no connection".into()))?;
        client.call(method, request).await.map_err(|error| match error {
            quicprochat_rpc::RpcError::Status { status, message, retry_after_ms, current_epoch, .. } => {
                DomainError::from_status(status, format!("{domain}: {message}"), retry_after_ms, current_epoch)
            }
            other => unavailable(other.to_string()),
        })
    }

    /// At shutdown: lets the stream senders finish their batches in flight
    /// (they send no new one) until `grace_ends`, then lets the connections
    /// to peers close, and logs what stays pending for each peer (it is
    /// sent after the restart).
    pub(crate) async fn drain_for_shutdown(&self, grace_ends: tokio::time::Instant) {
        self.senders.close();
        if tokio::time::timeout_at(grace_ends, self.senders.wait()).await.is_err() {
            tracing::warn!("grace period over with federation batches still in flight");
        }
        self.workers_done.cancel();
        for peer in self.peers.status() {
            if peer.pending > 0 {
                tracing::info!(peer = %peer.domain, pending = peer.pending, "federation entries pending; sent after the restart");
            }
        }
    }
}
