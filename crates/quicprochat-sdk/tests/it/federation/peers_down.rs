//! Issue 19, scenario 6: a server whose peers are all down serves its own
//! users as before (registration, login, local groups, `/healthz`); while
//! a group's hub is down, a member on another server gets a retryable error
//! for a commit, and the messages they send are kept and delivered once the
//! hub is back.

use std::net::{Ipv4Addr, SocketAddr};

use quicprochat_server::config::PeerConfig;

use super::{pin_of, team_across, two_peered_servers};
use crate::harness::{http_get, receive_n, team_of_three, texts, Harness, WAIT};

#[tokio::test]
async fn with_every_peer_down_local_users_and_health_are_unaffected() {
    let pins = tempfile::tempdir().expect("tempdir");
    let pin = pin_of(pins.path(), "b.test");
    let mut harness = Harness::start_with(|config| {
        config.domain = "a.test".to_owned();
        config.federation.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        config.federation.peers = vec![PeerConfig {
            domain: "b.test".to_owned(),
            // Nothing listens there: the peer is down for the whole test.
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)).to_string(),
            fingerprints: vec![pin],
        }];
        config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    })
    .await;
    let (alice, bob, _carol) = team_of_three(&harness).await;
    alice.send("team", "hello").await.expect("a local send");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["hello"]);
    bob.disconnect().await;
    let bob = harness.open("bob").await;
    bob.send("team", "logged in again").await.expect("bob logs in again and sends");
    assert_eq!(texts(&receive_n(&alice, 1).await), ["logged in again"]);

    let metrics = harness.server.as_ref().and_then(|server| server.metrics_addr()).expect("metrics");
    let (status, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/healthz")).await.expect("get");
    assert!(status.contains("200"), "{status} {body}");
    // A user of the down peer: a retryable error, nothing changed here.
    let error = alice.add_members("team", &["dave@b.test".into()]).await.expect_err("b is down");
    assert!(error.is_retryable(), "{error}");
    assert_eq!(alice.members("team").await.expect("members"), ["alice", "bob", "carol"]);
    harness.stop_server().await;
}

#[tokio::test]
async fn while_the_hub_is_down_a_members_commit_is_retryable_and_their_sends_wait_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (a, b) = two_peered_servers(dir).await;
    let [alice, carol, bob] = team_across(dir, &a, &b).await;
    let (a_addr, a_port) = (a.local_addr(), a.federation_addr().expect("a's port"));
    a.shutdown().await;
    assert!(b.wait_for_peer("a.test", WAIT, |status| !status.reachable).await.is_some(), "b sees a down");

    let error = bob.remove_members("team", &["carol@a.test".into()]).await.expect_err("the hub is down");
    assert!(error.is_retryable(), "{error}");
    let kept = bob.send("team", "while a was down").await.expect("b keeps bob's message");
    assert_eq!(kept.state, quicprochat_sdk::MessageState::Sent);

    // a comes back on its addresses; the message arrives, once.
    let pin_b = pin_of(dir, "b.test");
    let b_port = b.federation_addr().expect("b's port");
    let a = start_on(dir, a_addr, (a_port, ("b.test", b_port, pin_b))).await;
    for client in [&alice, &carol] {
        assert_eq!(texts(&receive_n(client, 1).await), ["while a was down"]);
    }
    // And the commit goes through now.
    bob.remove_members("team", &["carol@a.test".into()]).await.expect("the hub is back");
    assert_eq!(bob.members("team").await.expect("members"), ["alice@a.test", "bob"]);
    a.shutdown().await;
    b.shutdown().await;
}

/// a.test again on its client address `addr` and federation port.
async fn start_on(
    dir: &std::path::Path,
    addr: SocketAddr,
    (port, (peer, peer_port, pin)): (SocketAddr, (&str, SocketAddr, quicprochat_rpc::CertFingerprint)),
) -> quicprochat_server::RunningServer {
    let mut config = quicprochat_server::ServerConfig::new(dir.join("a.test"), addr);
    config.domain = "a.test".to_owned();
    config.federation.listen = Some(port);
    config.federation.retry_min = std::time::Duration::from_millis(50);
    config.federation.retry_max = std::time::Duration::from_secs(1);
    config.federation.peers =
        vec![PeerConfig { domain: peer.to_owned(), address: peer_port.to_string(), fingerprints: vec![pin] }];
    quicprochat_server::RunningServer::start(config).await.expect("a restarts")
}
