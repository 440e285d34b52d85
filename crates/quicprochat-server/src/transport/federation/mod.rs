//! The federation port (issue 19; plan in docs/design/federation.md): QUIC
//! with ALPN `qpc-fed/1`, TLS 1.3 with mutual authentication by pinned
//! certificates, between this server and the peers of `[[federation.peers]]`.
//!
//! - `peers`: the peer table (config, pins, status);
//! - `inbound`: accepting peer connections and serving their requests;
//! - `outbound`: one task per peer keeping a connection to it;
//! - `stream_sender`: one task per peer sending our stream to it;
//! - `wire`: stream entries between the wire and the domain.
//!
//! The port has its own endpoint (and UDP socket), which both accepts and
//! dials, so operators can firewall it apart from the client port and tests
//! can cut it alone. It is off unless `federation.listen` is set.

mod inbound;
mod outbound;
mod peers;
mod stream_sender;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::tls::ServerIdentity;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{FederationMetrics, Metrics};

pub use peers::PeerStatus;

pub(crate) use inbound::accept_peers;
pub(crate) use outbound::keep_in_touch_with_peers;
pub(crate) use peers::PeerTable;
pub(crate) use stream_sender::start_stream_senders;

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

impl Federation {
    /// The federation series.
    pub(crate) fn metrics(&self) -> &FederationMetrics {
        self.metrics.federation()
    }

    /// At shutdown: waits up to `bound` for the stream senders to finish
    /// their batches in flight (they send no new one), then lets the
    /// connections to peers close. Returns whether they all finished.
    pub(crate) async fn drain(&self, bound: std::time::Duration) -> bool {
        self.senders.close();
        let finished = tokio::time::timeout(bound, self.senders.wait()).await.is_ok();
        self.workers_done.cancel();
        finished
    }
}
