//! Federation between servers on loopback (issue 19): two servers that list
//! each other as peers, with a UDP relay on each direction of the link so a
//! test can cut it; and a dialler for tests that play a peer themselves.

mod claims;
mod crash;
mod relay;
mod stream;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::federation::{federation_client_config, peer_fingerprint};
use quicprochat_rpc::tls::ServerIdentity;
use quicprochat_rpc::transport::{client_endpoint, TransportLimits};
use quicprochat_rpc::{CertFingerprint, RpcClient, RpcError};
use quicprochat_server::config::PeerConfig;
use quicprochat_server::storage::{SqliteStore, Store};
use quicprochat_server::{RunningServer, ServerConfig, ServerError};

use crate::harness::{http_get, Harness, WAIT};
pub(crate) use relay::UdpRelay;

/// A config for `domain` on a new data dir with the federation port on,
/// and the certificate that data dir will use.
pub(crate) fn federated_config(dir: &tempfile::TempDir, domain: &str) -> (ServerConfig, ServerIdentity) {
    quicprochat_rpc::install_crypto_provider();
    let mut config = ServerConfig::new(dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.domain = domain.to_owned();
    config.federation.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let identity = quicprochat_server::server_identity(&config).expect("certificate");
    (config, identity)
}

/// A peer entry for `domain`, reached at `address`, pinned to `identity`.
pub(crate) fn peer(domain: &str, address: SocketAddr, identity: &ServerIdentity) -> PeerConfig {
    PeerConfig { domain: domain.to_owned(), address: address.to_string(), fingerprints: vec![identity.fingerprint()] }
}

/// Dials a federation port as the holder of `identity`, expecting the
/// callee's certificate to be `callee`.
pub(crate) async fn dial(
    addr: SocketAddr,
    identity: &ServerIdentity,
    callee_domain: &str,
    callee: CertFingerprint,
) -> Result<RpcClient, RpcError> {
    let endpoint = client_endpoint(addr)?;
    let config = federation_client_config(identity, callee_domain, vec![callee], &TransportLimits::default())?;
    let connection = tokio::time::timeout(WAIT, endpoint.connect_with(config, addr, callee_domain)?)
        .await
        .map_err(|_| RpcError::Unexpected("handshake timed out".into()))??;
    let fingerprint = peer_fingerprint(&connection).ok_or(RpcError::Truncated)?;
    Ok(RpcClient::from_connection(endpoint, connection, WAIT, fingerprint))
}

/// `FedHello` from `origin` to `destination`.
pub(crate) async fn hello(rpc: &RpcClient, origin: &str, destination: &str) -> Result<v1::FedHelloResponse, RpcError> {
    let request =
        v1::FedHelloRequest { origin: origin.to_owned(), destination: destination.to_owned(), server_instance: 7 };
    rpc.call(Method::FedHello, &request).await
}

/// Two servers, `a.test` and `b.test`, peers of each other through relays.
pub(crate) struct Pair {
    pub(crate) a: Harness,
    pub(crate) b: Harness,
    config_a: ServerConfig,
    /// The relay `b` dials `a` through.
    pub(crate) to_a: UdpRelay,
    /// The relay `a` dials `b` through.
    pub(crate) to_b: UdpRelay,
}

impl Pair {
    /// Starts both servers; `adjust` changes each config before it starts.
    pub(crate) async fn start(adjust: impl Fn(&mut ServerConfig)) -> Pair {
        let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (mut config_a, identity_a) = federated_config(&dir_a, "a.test");
        let (mut config_b, identity_b) = federated_config(&dir_b, "b.test");
        let (to_a, to_b) = (UdpRelay::bind().await, UdpRelay::bind().await);
        config_a.federation.peers = vec![peer("b.test", to_b.addr(), &identity_b)];
        config_b.federation.peers = vec![peer("a.test", to_a.addr(), &identity_a)];
        adjust(&mut config_a);
        adjust(&mut config_b);
        let a = RunningServer::start(config_a.clone()).await.expect("a starts");
        let b = RunningServer::start(config_b).await.expect("b starts");
        to_a.set_target(a.federation_addr().expect("a's federation port"));
        to_b.set_target(b.federation_addr().expect("b's federation port"));
        Pair { a: Harness { dir: dir_a, server: a }, b: Harness { dir: dir_b, server: b }, config_a, to_a, to_b }
    }

    /// Stops `a` gracefully, lets `offline` change its database as the
    /// server's own writer would, and starts it again on the same data dir.
    pub(crate) async fn restart_a(self, offline: impl FnOnce(&dyn Store)) -> Pair {
        let Pair { a, b, config_a, to_a, to_b } = self;
        a.server.shutdown().await;
        {
            let store = SqliteStore::open(config_a.data_dir.join("qpc-server.db")).expect("open a's database");
            offline(&store);
        }
        let server = RunningServer::start(config_a.clone()).await.expect("a restarts");
        to_a.set_target(server.federation_addr().expect("a's federation port"));
        Pair { a: Harness { dir: a.dir, server }, b, config_a, to_a, to_b }
    }
}

/// Short QUIC timeouts, so a cut link is noticed within about two seconds,
/// and a short retry ceiling, so a healed one is back within one.
pub(crate) fn quick_to_notice(config: &mut ServerConfig) {
    config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.transport.idle_timeout = Duration::from_secs(2);
    config.transport.keep_alive = Duration::from_millis(300);
    config.federation.retry_min = Duration::from_millis(50);
    config.federation.retry_max = Duration::from_secs(1);
}

#[tokio::test]
async fn two_servers_greet_each_other_and_find_each_other_again_after_a_cut() {
    let pair = Pair::start(quick_to_notice).await;
    for (server, peer) in [(&pair.a, "b.test"), (&pair.b, "a.test")] {
        let status = server.server.wait_for_peer(peer, WAIT, |status| status.reachable).await;
        let status =
            status.unwrap_or_else(|| panic!("{peer} becomes reachable: {:?}", server.server.federation_peers()));
        assert_eq!(status.last_error, None);
        assert!(status.instance.is_some_and(|instance| instance != 0), "the peer told its instance");
    }

    let metrics = pair.a.server.metrics_addr().expect("metrics");
    let (status, report) = tokio::task::spawn_blocking(move || http_get(metrics, "/federation")).await.expect("get");
    assert!(status.contains("200"), "{status}");
    let peers: Vec<quicprochat_server::PeerStatus> = serde_json::from_str(&report).expect("JSON");
    assert!(peers.len() == 1 && peers[0].domain == "b.test" && peers[0].reachable, "{report}");

    // Each direction is its own connection: cutting one leaves the other up.
    for (cut, server, peer, other, other_peer) in
        [(&pair.to_b, &pair.a, "b.test", &pair.b, "a.test"), (&pair.to_a, &pair.b, "a.test", &pair.a, "b.test")]
    {
        cut.cut();
        let down = server.server.wait_for_peer(peer, WAIT, |status| !status.reachable).await;
        let down = down.unwrap_or_else(|| panic!("the link to {peer} is noticed cut"));
        assert!(down.last_error.is_some(), "and the status says why: {down:?}");
        let untouched = other.server.federation_peers();
        assert!(untouched.iter().any(|status| status.domain == other_peer && status.reachable), "{untouched:?}");
        cut.heal();
        let back = server.server.wait_for_peer(peer, WAIT, |status| status.reachable).await;
        assert!(back.is_some(), "{peer} is reached again after the heal");
    }
    pair.a.server.shutdown().await;
    pair.b.server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_federated_keeps_its_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = federated_config(&dir, "a.test");
    let server = RunningServer::start(config.clone()).await.expect("starts as a.test");
    server.shutdown().await;

    let mut renamed = config.clone();
    renamed.domain = "b.test".to_owned();
    match RunningServer::start(renamed).await {
        Err(error @ ServerError::DomainChanged { .. }) => {
            let message = error.to_string();
            assert!(message.contains("a.test") && message.contains("b.test"), "{message}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a federated database started under another domain"),
    }
    // Under its own domain it still starts.
    RunningServer::start(config).await.expect("starts as a.test again").shutdown().await;
}
