//! Hostile frames: rejected from the header alone, and the server stays
//! healthy for everyone else.

use quicprochat_proto::v1;
use quicprochat_proto::{Frame, FrameKind, Method, Status};
use quicprochat_rpc::stream::read_frame;
use quicprochat_rpc::CLOSE_PROTOCOL_VIOLATION;

use crate::harness::{status_of, Harness, TestServer, WAIT};

/// Writes raw bytes on a new stream and returns the response frame, if any.
async fn raw_exchange(rpc: &quicprochat_rpc::RpcClient, bytes: &[u8]) -> Option<Frame> {
    let (mut send, mut recv) = rpc.connection().open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    let _ = send.finish();
    tokio::time::timeout(WAIT, read_frame(&mut recv)).await.expect("answer in time").ok().flatten()
}

fn header(len: u32, method: u16) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&method.to_be_bytes());
    bytes.extend_from_slice(&[FrameKind::Request as u8, 0]);
    bytes
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_before_allocation() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    for len in [u32::MAX, Method::Login.max_request_len() + 1] {
        // Only the header is sent: the server answers without waiting for a body.
        let frame = raw_exchange(&rpc, &header(len, Method::Login as u16)).await.expect("a response frame");
        assert_eq!(frame.status, Status::InvalidArgument);
    }
    // The same connection still works.
    let _: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("healthy");
}

#[tokio::test]
async fn garbage_protobuf_is_invalid_argument() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let result = rpc.call_raw(Method::Register, bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f])).await;
    assert_eq!(status_of(result), Status::InvalidArgument);
}

#[tokio::test]
async fn unknown_method_closes_only_that_connection() {
    let harness = Harness::start().await;
    let bad = harness.connect().await;
    let bystander = harness.connect().await;
    let mut frame = header(0, 999);
    frame.extend_from_slice(b"");
    assert!(raw_exchange(&bad, &frame).await.is_none(), "no answer to an unknown method");
    let reason = tokio::time::timeout(WAIT, bad.connection().closed()).await.expect("connection closed");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_PROTOCOL_VIOLATION));
        }
        other => panic!("expected an application close, got {other}"),
    }
    let _: v1::ChallengeResponse =
        bystander.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("others are unaffected");
}

#[tokio::test]
async fn truncated_frame_gets_no_answer_and_server_stays_up() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let mut truncated = header(100, Method::Challenge as u16);
    truncated.extend_from_slice(&[0u8; 10]);
    assert!(raw_exchange(&rpc, &truncated).await.is_none());
    let _: v1::ChallengeResponse = rpc.call(Method::Challenge, &v1::ChallengeRequest {}).await.expect("healthy");
}
