//! The federation series (issue 19), registered with the server's others:
//! - `fed_auth_failures_total{reason}`: federation connections or requests
//!   refused for who the caller is: `unpinned_certificate`,
//!   `no_certificate`, `handshake` (another failed handshake on the
//!   federation port: wrong ALPN, no common key exchange, ...), `origin`
//!   (a request naming another origin than the authenticated peer),
//!   `destination` (a request for another server), `not_hub` (a batch with
//!   an event for a group the peer does not host, refused whole);
//! - `fed_peer_up{peer}`: 1 while our connection to the peer is up;
//! - outbound, per peer: `fed_outbound_pending_entries` (written, not yet
//!   acknowledged), `fed_outbound_oldest_age_seconds` (how long the oldest
//!   of them has waited, computed at scrape: the lag), `fed_outbound_sent_total`
//!   (entries the peer acknowledged), `fed_retries_total{reason}` (batches
//!   that failed and will be resent: `unreachable`, `timeout`, `unavailable`,
//!   `refused` (the peer answered with an error), `error`, `stalled`), `fed_outbound_expired_total` (entries deleted after
//!   waiting `delivery.retention` for an unreachable peer);
//! - inbound, per peer: `fed_inbound_applied_total{kind}`,
//!   `fed_inbound_duplicates_total`, `fed_inbound_rejected_total{reason}`
//!   (entries applied as refused: `no_recipients`, `bad_sender`,
//!   `bad_message_id`, `bad_group_name`, `bad_recipients`, `bad_epoch`,
//!   `message_id_conflict`, `unknown_event`), and
//!   `fed_delivery_seconds`, from the origin accepting an event to its
//!   entries being durable here (across two clocks: only as good as their
//!   agreement);
//! - `fed_key_package_claims_total{peer, outcome}`: the peer's claims of
//!   our users' key packages: `served`, `last_resort` (past the target's
//!   budget), `refused` (past the peer's or requester's budget, an unknown
//!   user, none left).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerReasonLabels {
    peer: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerOutcomeLabels {
    peer: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerKindLabels {
    peer: String,
    kind: String,
}

/// Delivery buckets: 1 ms doubling 20 times, up to ~17 min (a partition's
/// backlog is delivered late, and that is what the histogram should show).
fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Federation metrics; part of [`super::Metrics`].
#[derive(Debug)]
pub struct FederationMetrics {
    auth_failures: Family<ReasonLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
    pending: Family<PeerLabels, Gauge>,
    oldest_age: Family<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Per peer: when the oldest pending entry was accepted (ms), for the age.
    oldest_pending_ms: Mutex<HashMap<String, Option<u64>>>,
    sent: Family<PeerLabels, Counter>,
    expired: Family<PeerLabels, Counter>,
    retries: Family<PeerReasonLabels, Counter>,
    applied: Family<PeerKindLabels, Counter>,
    duplicates: Family<PeerLabels, Counter>,
    rejected: Family<PeerReasonLabels, Counter>,
    delivery: HistogramFamily<PeerLabels>,
    claims: Family<PeerOutcomeLabels, Counter>,
    /// Every peer's status as JSON, for `/federation` (set by the peer table).
    peer_report: Mutex<String>,
}

impl FederationMetrics {
    pub(super) fn register(registry: &mut Registry) -> FederationMetrics {
        let metrics = FederationMetrics {
            auth_failures: Family::default(),
            peer_up: Family::default(),
            pending: Family::default(),
            oldest_age: Family::default(),
            oldest_pending_ms: Mutex::default(),
            sent: Family::default(),
            expired: Family::default(),
            retries: Family::default(),
            applied: Family::default(),
            duplicates: Family::default(),
            rejected: Family::default(),
            delivery: Family::new_with_constructor(delivery_histogram),
            claims: Family::default(),
            peer_report: Mutex::new("[]".to_owned()),
        };
        registry.register(
            "fed_auth_failures",
            "Federation connections and requests refused for who the caller is, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register("fed_peer_up", "1 while the connection to the peer is up, else 0", metrics.peer_up.clone());
        registry.register(
            "fed_outbound_pending_entries",
            "Stream entries written for the peer and not yet acknowledged",
            metrics.pending.clone(),
        );
        registry.register(
            "fed_outbound_oldest_age_seconds",
            "How long the oldest entry pending for the peer has waited",
            metrics.oldest_age.clone(),
        );
        registry.register("fed_outbound_sent", "Stream entries the peer acknowledged", metrics.sent.clone());
        registry.register(
            "fed_outbound_expired",
            "Stream entries deleted after waiting delivery.retention for the peer",
            metrics.expired.clone(),
        );
        registry.register(
            "fed_retries",
            "Batches to the peer that failed and will be resent, by reason",
            metrics.retries.clone(),
        );
        registry.register("fed_inbound_applied", "Peer entries queued here, by kind", metrics.applied.clone());
        registry.register(
            "fed_inbound_duplicates",
            "Peer entries received again and not applied twice",
            metrics.duplicates.clone(),
        );
        registry.register(
            "fed_inbound_rejected",
            "Peer entries applied as refused (not queued; the stream moves on), by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "fed_delivery_seconds",
            "From the origin accepting an event to its entries being durable here",
            metrics.delivery.clone(),
        );
        registry.register(
            "fed_key_package_claims",
            "The peer's claims of our users' key packages, by outcome",
            metrics.claims.clone(),
        );
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

    /// The outbound stream to `peer`: entries pending and when the oldest
    /// was accepted.
    pub fn set_outbound(&self, peer: &str, pending: u64, oldest_pending_ms: Option<u64>) {
        let labels = PeerLabels { peer: peer.to_owned() };
        self.pending.get_or_create(&labels).set(i64::try_from(pending).unwrap_or(i64::MAX));
        if let Ok(mut oldest) = self.oldest_pending_ms.lock() {
            oldest.insert(peer.to_owned(), oldest_pending_ms);
        }
    }

    /// `peer` acknowledged `entries` more entries.
    pub fn sent(&self, peer: &str, entries: u64) {
        self.sent.get_or_create(&PeerLabels { peer: peer.to_owned() }).inc_by(entries);
    }

    /// `entries` waited longer than the retention for `peer` and were deleted.
    pub fn expired(&self, peer: &str, entries: u64) {
        self.expired.get_or_create(&PeerLabels { peer: peer.to_owned() }).inc_by(entries);
    }

    /// A batch to `peer` failed for `reason` and will be resent.
    pub fn retry(&self, peer: &str, reason: &str) {
        self.retries.get_or_create(&PeerReasonLabels { peer: peer.to_owned(), reason: reason.to_owned() }).inc();
    }

    /// An entry of `peer` was queued here; `delay_ms` since the origin accepted it.
    pub fn applied(&self, peer: &str, kind: &str, delay_ms: u64) {
        self.applied.get_or_create(&PeerKindLabels { peer: peer.to_owned(), kind: kind.to_owned() }).inc();
        let seconds = delay_ms as f64 / 1000.0;
        self.delivery.get_or_create(&PeerLabels { peer: peer.to_owned() }).observe(seconds);
    }

    /// `count` entries of `peer` arrived again.
    pub fn duplicates(&self, peer: &str, count: u64) {
        if count > 0 {
            self.duplicates.get_or_create(&PeerLabels { peer: peer.to_owned() }).inc_by(count);
        }
    }

    /// An entry of `peer` was applied as refused for `reason`.
    pub fn rejected(&self, peer: &str, reason: &str) {
        self.rejected.get_or_create(&PeerReasonLabels { peer: peer.to_owned(), reason: reason.to_owned() }).inc();
    }

    /// A key package claim of `peer` ended as `outcome`.
    pub fn claim(&self, peer: &str, outcome: &str) {
        self.claims.get_or_create(&PeerOutcomeLabels { peer: peer.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    /// Every peer's status, as JSON (`/federation`).
    pub fn peer_report(&self) -> String {
        self.peer_report.lock().map(|report| report.clone()).unwrap_or_else(|_| "[]".to_owned())
    }

    pub(crate) fn set_peer_report(&self, report: String) {
        if let Ok(mut current) = self.peer_report.lock() {
            *current = report;
        }
    }

    /// Sets the oldest-age gauges from the recorded times (at scrape).
    pub(super) fn refresh_ages(&self, now_ms: u64) {
        let Ok(oldest) = self.oldest_pending_ms.lock() else { return };
        for (peer, oldest_ms) in oldest.iter() {
            let age_ms = oldest_ms.map_or(0, |at| now_ms.saturating_sub(at));
            self.oldest_age.get_or_create(&PeerLabels { peer: peer.clone() }).set(age_ms as f64 / 1000.0);
        }
    }
}
