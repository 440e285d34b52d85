//! The federation port (issue 19; plan in docs/design/federation.md): QUIC
//! with ALPN `qpc-fed/1`, TLS 1.3 with mutual authentication by pinned
//! certificates, between this server and the peers of `[[federation.peers]]`.
//!
//! - `peers`: the peer table (config, pins, status);
//! - `inbound`: accepting peer connections and serving their requests;
//! - `outbound`: one task per peer keeping a connection to it.
//!
//! The port has its own endpoint (and UDP socket), which both accepts and
//! dials, so operators can firewall it apart from the client port and tests
//! can cut it alone. It is off unless `federation.listen` is set.

mod inbound;
mod outbound;
mod peers;

use std::net::SocketAddr;
use std::sync::Arc;

use quicprochat_rpc::tls::ServerIdentity;

pub use peers::PeerStatus;

pub(crate) use inbound::accept_peers;
pub(crate) use outbound::keep_in_touch_with_peers;
pub(crate) use peers::PeerTable;

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
}
