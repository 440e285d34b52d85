//! Graceful shutdown: connections are closed with the shutdown code, and
//! once `shutdown()` returns the address is free for a new server at once.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quicprochat_proto::v1;
use quicprochat_proto::{Frame, Method, Status, HEADER_LEN};
use quicprochat_rpc::stream::read_frame;
use quicprochat_rpc::CLOSE_SERVER_SHUTDOWN;
use quicprochat_server::{RunningServer, ServerConfig};
use tokio::net::UdpSocket;

use crate::harness::{Harness, TestServer, WAIT};

#[tokio::test]
async fn shutdown_closes_connections_with_the_shutdown_code() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let addr = harness.server.local_addr();
    tokio::time::timeout(WAIT, harness.server.shutdown()).await.expect("shutdown completes");
    let reason = tokio::time::timeout(WAIT, rpc.connection().closed()).await.expect("connection closed");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_SERVER_SHUTDOWN));
            assert_eq!(&close.reason[..], b"server shutting down");
        }
        other => panic!("expected an application close, got {other}"),
    }
    // Nothing listens any more.
    let pin = quicprochat_rpc::PinnedServer::new(None);
    let limits = quicprochat_rpc::transport::TransportLimits::default();
    let again = quicprochat_rpc::RpcClient::connect(addr, pin, &limits, std::time::Duration::from_millis(500)).await;
    assert!(again.is_err());
}

/// A request still arriving when shutdown begins does not hold up the
/// drain until its read deadline (here longer than the test waits): it is
/// answered `UNAVAILABLE` at once, or its connection closes with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_arriving_does_not_hold_up_shutdown() {
    let slow = Duration::from_secs(120);
    let harness = Harness::start_with(|config| {
        config.shutdown_grace = slow;
        config.connections.stream_read_timeout = slow;
    })
    .await;
    let rpc = harness.connect().await;
    let (mut send, mut recv) = rpc.connection().open_bi().await.expect("stream");
    let mut frame = BytesMut::new();
    Frame::request(Method::Ping, Bytes::from(vec![0u8; 64])).encode(&mut frame).expect("encode");
    send.write_all(&frame[..HEADER_LEN + 8]).await.expect("write the header and part of the body");
    // Answered after the server took the first stream: its header is in.
    let _: v1::PingResponse = rpc.call(Method::Ping, &v1::PingRequest::default()).await.expect("ping");

    tokio::time::timeout(WAIT, harness.server.shutdown()).await.expect("shutdown does not wait for the request");
    match read_frame(&mut recv).await {
        Ok(Some(answer)) => assert_eq!((answer.method, answer.status), (Method::Ping, Status::Unavailable)),
        Ok(None) => panic!("the stream ended without an answer"),
        // The connection closed before the answer arrived: retryable too.
        Err(error) => assert!(rpc.connection().close_reason().is_some(), "{error}"),
    }
}

/// A subscribed client has a push task on the server holding its
/// connection; `shutdown()` returns only after that task ended and the
/// socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_is_free_when_shutdown_returns_with_a_subscribed_client() {
    let harness = Harness::start().await;
    let (rpc, _alice) = harness.register("alice").await;
    let _: v1::SubscribeResponse =
        rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq: 0 }).await.expect("subscribe");
    let mut push = tokio::time::timeout(WAIT, rpc.accept_push()).await.expect("push stream in time").expect("push");
    let hello = tokio::time::timeout(WAIT, push.next()).await.expect("first push in time").expect("push event");
    assert!(hello.is_some(), "the push task announces its stream with an empty event");

    let addr = harness.server.local_addr();
    tokio::time::timeout(WAIT, harness.server.shutdown()).await.expect("shutdown completes");
    let restarted = start_on(addr, &harness.dir).await;
    restarted.shutdown().await;
}

/// A handshake the server has started but the client never finishes: the
/// client's packets reach the server through a relay that drops every
/// packet coming back, so the server holds a half-open connection when it
/// shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_is_free_when_shutdown_returns_during_a_half_open_handshake() {
    let harness = Harness::start().await;
    let addr = harness.server.local_addr();
    let relay = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.expect("relay socket");
    let relay_addr = relay.local_addr().expect("relay address");
    let client = quicprochat_rpc::transport::client_endpoint(relay_addr).expect("client endpoint");
    let config = quicprochat_rpc::transport::client_config(
        quicprochat_rpc::PinnedServer::new(None),
        &quicprochat_rpc::transport::TransportLimits::default(),
    )
    .expect("client config");
    // Never polled: quinn's driver sends the Initial packets by itself.
    let _connecting = client.connect_with(config, relay_addr, "localhost").expect("connect");
    let (server_answered, answered) = tokio::sync::oneshot::channel();
    let relay_task = tokio::spawn(relay_one_way(relay, addr, server_answered));
    tokio::time::timeout(WAIT, answered).await.expect("the server answers the Initial").expect("relay running");
    // The next server must not see the client's retransmissions.
    relay_task.abort();

    tokio::time::timeout(WAIT, harness.server.shutdown()).await.expect("shutdown completes");
    let restarted = start_on(addr, &harness.dir).await;
    restarted.shutdown().await;
}

/// Forwards every datagram from the client to `server` and drops every
/// datagram from `server`, signalling the first one: the server then holds
/// a handshake in progress.
async fn relay_one_way(relay: UdpSocket, server: SocketAddr, server_answered: tokio::sync::oneshot::Sender<()>) {
    let mut server_answered = Some(server_answered);
    let mut datagram = vec![0u8; 65_536];
    loop {
        let (len, from) = relay.recv_from(&mut datagram).await.expect("relay receive");
        if from == server {
            if let Some(signal) = server_answered.take() {
                let _ = signal.send(());
            }
        } else {
            relay.send_to(&datagram[..len], server).await.expect("relay send");
        }
    }
}

/// Starts a new server on `addr` (the old one's data dir), which must be free.
async fn start_on(addr: SocketAddr, dir: &tempfile::TempDir) -> RunningServer {
    let config = ServerConfig::new(dir.path().join("data"), addr);
    match RunningServer::start(config).await {
        Ok(server) => server,
        Err(error) => panic!("a new server cannot bind {addr} right after shutdown() returned: {error:?}"),
    }
}
