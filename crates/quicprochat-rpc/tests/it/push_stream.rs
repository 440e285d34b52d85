//! The client's push stream against a raw quinn server that writes frames
//! in pieces: a read dropped part-way through a frame loses nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use quicprochat_proto::v1::{PushEvent, QueueEntry};
use quicprochat_proto::Frame;
use quicprochat_rpc::tls::generate_server_identity;
use quicprochat_rpc::transport::{server_endpoint, IncomingLimits, TransportLimits};
use quicprochat_rpc::{PinnedServer, PushStream, RpcClient, RpcError};
use tokio::sync::oneshot;

/// How long a test waits for an event before failing.
const WAIT: Duration = Duration::from_secs(10);

fn event_bytes(seqs: &[u64]) -> Vec<u8> {
    let entries = seqs.iter().map(|&seq| QueueEntry { seq, payload: vec![7u8; 300].into(), ..QueueEntry::default() });
    let event = PushEvent { entries: entries.collect() };
    let mut out = BytesMut::new();
    Frame::push(Bytes::from(event.encode_to_vec())).encode(&mut out).expect("a small frame");
    out.to_vec()
}

fn seqs(event: Option<PushEvent>) -> Vec<u64> {
    event.expect("an event, not the end").entries.iter().map(|entry| entry.seq).collect()
}

/// A server that opens the push stream and writes `first`, then, once the
/// client says so, `rest` and finishes the stream; and the client's end.
async fn push_in_two_parts(first: Vec<u8>, rest: Vec<u8>) -> (PushStream, oneshot::Sender<()>, RpcClient) {
    quicprochat_rpc::install_crypto_provider();
    let identity = generate_server_identity(&["localhost".to_owned()]).expect("identity");
    let incoming = IncomingLimits { max_pending_handshakes: 8, incoming_buffer_bytes: 1024 * 1024 };
    let endpoint =
        server_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &identity, &TransportLimits::default(), incoming)
            .expect("server endpoint");
    let addr = endpoint.local_addr().expect("bound");
    let (go_on, proceed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let connection = endpoint.accept().await.expect("incoming").await.expect("handshake");
        let mut send = connection.open_uni().await.expect("push stream");
        send.write_all(&first).await.expect("first part");
        if proceed.await.is_ok() {
            send.write_all(&rest).await.expect("rest");
        }
        send.finish().expect("finish");
        connection.closed().await;
    });
    let pin = PinnedServer::new(Some(identity.fingerprint()));
    let client = RpcClient::connect(addr, pin, &TransportLimits::default(), WAIT).await.expect("connect");
    let push = tokio::time::timeout(WAIT, client.accept_push()).await.expect("push stream in time").expect("push");
    (push, go_on, client)
}

#[tokio::test]
async fn a_read_dropped_mid_frame_loses_nothing() {
    let (first, second) = (event_bytes(&[1]), event_bytes(&[2, 3]));
    // One write (one packet): the first event and 5 bytes of the second's header.
    let sent = [first.clone(), second[..5].to_vec()].concat();
    let (mut push, go_on, _client) = push_in_two_parts(sent, second[5..].to_vec()).await;
    assert_eq!(seqs(tokio::time::timeout(WAIT, push.next()).await.expect("in time").expect("first event")), [1]);
    // Polled once and dropped with the 5 header bytes read so far: they stay with the stream.
    assert!(push.ready().is_none(), "half a frame is not an event");
    go_on.send(()).expect("server waits");
    assert_eq!(seqs(tokio::time::timeout(WAIT, push.next()).await.expect("in time").expect("second event")), [2, 3]);
    assert!(tokio::time::timeout(WAIT, push.next()).await.expect("in time").expect("clean end").is_none());
}

#[tokio::test]
async fn ready_takes_events_that_have_arrived() {
    let sent = [event_bytes(&[1]), event_bytes(&[2]), event_bytes(&[3])].concat();
    let (mut push, go_on, _client) = push_in_two_parts(sent, Vec::new()).await;
    assert_eq!(seqs(tokio::time::timeout(WAIT, push.next()).await.expect("in time").expect("first event")), [1]);
    assert_eq!(seqs(arrived(&mut push).await), [2]);
    assert_eq!(seqs(arrived(&mut push).await), [3]);
    assert!(push.ready().is_none(), "nothing more was sent");
    drop(go_on);
}

/// The next event through [`PushStream::ready`] alone, polled until it has
/// arrived (written with the first, it normally already has).
async fn arrived(push: &mut PushStream) -> Option<PushEvent> {
    let polled = async {
        loop {
            if let Some(event) = push.ready() {
                return event.expect("an event");
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, polled).await.expect("the event arrives")
}

#[tokio::test]
async fn a_stream_ending_mid_frame_is_truncated() {
    let second = event_bytes(&[2]);
    let (mut push, go_on, _client) = push_in_two_parts(second[..20].to_vec(), Vec::new()).await;
    drop(go_on);
    let result = tokio::time::timeout(WAIT, push.next()).await.expect("in time");
    assert!(matches!(result, Err(RpcError::Truncated)), "{result:?}");
}
