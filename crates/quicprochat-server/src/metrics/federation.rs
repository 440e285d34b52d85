//! The federation series (issue 19), registered with the server's others:
//! - `fed_auth_failures_total{reason}`: federation connections or requests
//!   refused for who the caller is: `unpinned_certificate`,
//!   `no_certificate`, `handshake` (another failed handshake on the
//!   federation port: wrong ALPN, no common key exchange, ...), `origin`
//!   (a request naming another origin than the authenticated peer),
//!   `destination` (a request for another server);
//! - `fed_peer_up{peer}`: 1 while our connection to the peer is up.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// Federation metrics; part of [`super::Metrics`].
#[derive(Debug)]
pub struct FederationMetrics {
    auth_failures: Family<ReasonLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
}

impl FederationMetrics {
    pub(super) fn register(registry: &mut Registry) -> FederationMetrics {
        let metrics = FederationMetrics { auth_failures: Family::default(), peer_up: Family::default() };
        registry.register(
            "fed_auth_failures",
            "Federation connections and requests refused for who the caller is, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register("fed_peer_up", "1 while the connection to the peer is up, else 0", metrics.peer_up.clone());
        metrics
    }

    /// A federation connection or request refused for `reason`.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Whether our connection to `peer` is up.
    pub fn set_peer_up(&self, peer: &str, up: bool) {
        self.peer_up.get_or_create(&PeerLabels { peer: peer.to_owned() }).set(i64::from(up));
    }
}
