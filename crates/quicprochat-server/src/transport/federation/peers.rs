//! The peer table: each configured peer server, the certificate pins that
//! identify it, and what we know of it now (reachable or not, last error,
//! its server instance), published on a watch channel for whoever waits
//! on a change (tests, `federation status` later).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicprochat_rpc::federation::PeerPins;
use quicprochat_rpc::{CertFingerprint, RpcClient};
use tokio::sync::{watch, Notify};

use crate::config::PeerConfig;
use crate::metrics::Metrics;

/// What this server knows of one peer now (also served as JSON on the
/// HTTP endpoint's `/federation`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The peer's domain.
    pub domain: String,
    /// Whether our connection to it is up (its `FedHello` answered).
    pub reachable: bool,
    /// The last dial or connection error, kept until the next success.
    pub last_error: Option<String>,
    /// The server instance it announced answering our last `FedHello`; it
    /// changes when the peer restarts.
    pub instance: Option<u64>,
    /// Entries of our stream to it written and not yet acknowledged.
    pub pending: u64,
    /// The seq through which our stream to it is settled: acknowledged, or
    /// expired unacknowledged (known once our stream sender read it).
    #[serde(default)]
    pub acked_through: u64,
}

/// One configured peer.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) config: PeerConfig,
    /// Notified when the peer gets in touch, so a backing-off dialler
    /// retries at once.
    pub(crate) wake: Notify,
    /// Notified for the stream sender when the peer gets in touch.
    pub(crate) stream_wake: Notify,
    /// Notified when entries were appended to our stream to the peer.
    pub(crate) written: Notify,
    /// Our current connection to the peer (its hello answered), if any.
    pub(crate) connection: watch::Sender<Option<RpcClient>>,
    /// Connections the peer holds open to us now.
    pub(crate) inbound_connections: std::sync::atomic::AtomicUsize,
}

/// Every configured peer, in config order.
#[derive(Debug)]
pub(crate) struct PeerTable {
    peers: Vec<Arc<Peer>>,
    pins: Arc<PeerPins>,
    status: Mutex<Vec<PeerStatus>>,
    changed: watch::Sender<u64>,
    metrics: Metrics,
}

impl PeerTable {
    /// The table of `configs` (already checked by the config loader: no
    /// domain twice, no pin for two peers).
    pub(crate) fn new(configs: &[PeerConfig], metrics: Metrics) -> PeerTable {
        let mut pins = PeerPins::default();
        for config in configs {
            for pin in &config.fingerprints {
                if let Some(other) = pins.insert(*pin, &config.domain) {
                    tracing::error!(%pin, first = %other, second = %config.domain, "a pin names two peers; the second wins");
                }
            }
            metrics.federation().set_peer_up(&config.domain, false);
        }
        let status = configs
            .iter()
            .map(|config| PeerStatus {
                domain: config.domain.clone(),
                reachable: false,
                last_error: None,
                instance: None,
                pending: 0,
                acked_through: 0,
            })
            .collect();
        let table = PeerTable {
            peers: configs
                .iter()
                .map(|config| {
                    Arc::new(Peer {
                        config: config.clone(),
                        wake: Notify::new(),
                        stream_wake: Notify::new(),
                        written: Notify::new(),
                        connection: watch::channel(None).0,
                        inbound_connections: std::sync::atomic::AtomicUsize::new(0),
                    })
                })
                .collect(),
            pins: Arc::new(pins),
            status: Mutex::new(status),
            changed: watch::channel(0).0,
            metrics,
        };
        table.publish_report();
        table
    }

    /// The pins, for the federation port's TLS config.
    pub(crate) fn pins(&self) -> Arc<PeerPins> {
        self.pins.clone()
    }

    /// Every peer.
    pub(crate) fn peers(&self) -> &[Arc<Peer>] {
        &self.peers
    }

    /// The peer whose certificate has `fingerprint`.
    pub(crate) fn by_fingerprint(&self, fingerprint: &CertFingerprint) -> Option<&Arc<Peer>> {
        let domain = self.pins.domain_of(fingerprint)?;
        self.peers.iter().find(|peer| peer.config.domain == domain)
    }

    /// A snapshot of every peer's status.
    pub(crate) fn status(&self) -> Vec<PeerStatus> {
        self.status.lock().map(|status| status.clone()).unwrap_or_default()
    }

    /// Records that `domain` answered (or called) us, announcing `instance`.
    pub(crate) fn mark_reachable(&self, domain: &str, instance: u64) {
        self.update(domain, |status| {
            status.reachable = true;
            status.last_error = None;
            status.instance = Some(instance);
        });
        self.metrics.federation().set_peer_up(domain, true);
    }

    /// Records that our connection to `domain` failed or ended.
    pub(crate) fn mark_unreachable(&self, domain: &str, error: String) {
        self.update(domain, |status| {
            status.reachable = false;
            status.last_error = Some(error);
        });
        self.metrics.federation().set_peer_up(domain, false);
    }

    /// Records how many entries of our stream to `domain` are pending, and
    /// through which seq it acknowledged them.
    pub(crate) fn set_pending(&self, domain: &str, pending: u64, acked_through: u64) {
        self.update(domain, |status| {
            status.pending = pending;
            status.acked_through = acked_through;
        });
    }

    /// Hands every peer's status, as JSON, to `/federation`.
    fn publish_report(&self) {
        match serde_json::to_string(&self.status()) {
            Ok(report) => self.metrics.federation().set_peer_report(report),
            Err(error) => tracing::error!(%error, "cannot encode the peers' status"),
        }
    }

    fn update(&self, domain: &str, change: impl FnOnce(&mut PeerStatus)) {
        let Ok(mut statuses) = self.status.lock() else { return };
        if let Some(status) = statuses.iter_mut().find(|status| status.domain == domain) {
            let before = status.clone();
            change(status);
            if *status != before {
                self.changed.send_modify(|version| *version += 1);
                drop(statuses);
                self.publish_report();
            }
        }
    }

    /// Waits up to `bound` until `condition` holds for the status of
    /// `domain`; returns that status, or `None` on timeout or an unknown
    /// domain.
    pub(crate) async fn wait_for(
        &self,
        domain: &str,
        bound: Duration,
        condition: impl Fn(&PeerStatus) -> bool,
    ) -> Option<PeerStatus> {
        let mut changes = self.changed.subscribe();
        let check = || self.status().into_iter().find(|status| status.domain == domain).filter(|s| condition(s));
        tokio::time::timeout(bound, async {
            loop {
                if let Some(status) = check() {
                    return Some(status);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}
