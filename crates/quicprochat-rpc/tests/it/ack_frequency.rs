//! Both ends ask each other for fewer ACKs (QUIC's ACK frequency
//! extension, `transport.rs`): after one request and its answer, each has
//! sent the other an ACK_FREQUENCY frame.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quicprochat_rpc::tls::generate_server_identity;
use quicprochat_rpc::transport::{client_config, client_endpoint, server_endpoint, IncomingLimits, TransportLimits};
use quicprochat_rpc::PinnedServer;

/// How long a test waits for an event before failing.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn each_end_asks_the_other_for_fewer_acks() {
    quicprochat_rpc::install_crypto_provider();
    let identity = generate_server_identity(&["localhost".to_owned()]).expect("identity");
    let incoming = IncomingLimits { max_pending_handshakes: 8, incoming_buffer_bytes: 1024 * 1024 };
    let limits = TransportLimits::default();
    let server = server_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &identity, &limits, incoming)
        .expect("server endpoint");
    let addr = server.local_addr().expect("bound");
    let echo = tokio::spawn(async move {
        let connection = server.accept().await.expect("incoming").await.expect("handshake");
        let (mut send, mut receive) = connection.accept_bi().await.expect("a request stream");
        let request = receive.read_to_end(1024).await.expect("the request");
        send.write_all(&request).await.expect("the answer");
        send.finish().expect("finish");
        connection.closed().await;
    });

    let mut client = client_endpoint(addr).expect("client endpoint");
    client.set_default_client_config(
        client_config(PinnedServer::new(Some(identity.fingerprint())), &limits).expect("client config"),
    );
    let connection = tokio::time::timeout(WAIT, client.connect(addr, "localhost").expect("connect"))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (mut send, mut receive) = connection.open_bi().await.expect("a request stream");
    send.write_all(b"ping").await.expect("the request");
    send.finish().expect("finish");
    let answer = tokio::time::timeout(WAIT, receive.read_to_end(1024)).await.expect("answer in time").expect("answer");
    assert_eq!(answer, b"ping");

    let stats = connection.stats();
    assert_eq!(stats.frame_tx.ack_frequency, 1, "the client asked the server once");
    assert_eq!(stats.frame_rx.ack_frequency, 1, "the server asked the client once");
    connection.close(0u32.into(), b"done");
    tokio::time::timeout(WAIT, echo).await.expect("server ends in time").expect("server task");
}
